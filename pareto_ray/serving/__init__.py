"""Serving: one deployed model answers for every trade-off λ.

* ``schemas`` — settings, requests, responses, errors (the HTTP API's shapes);
* ``inputs`` — validation of λ and inputs;
* ``predictors`` — running a batch: grouping by λ, merged-weight LRU, the path cost model;
* ``loading`` — the served model from a checkpoint or MLflow;
* ``selection`` — picking λ by outcome on the evaluated front;
* ``engine`` — all of the above behind one object, no Ray;
* ``app`` — the Ray Serve deployment and its FastAPI ingress.
"""
