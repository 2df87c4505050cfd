"""Ray job entrypoint for training; the options are `pareto-ray train`'s.

    ray job submit --working-dir . -- python jobs/train.py --config jobs/configs/quickstart.yaml --set train.epochs=3

Launched as a job, `ray.init()` joins the job's cluster (Ray sets RAY_ADDRESS);
checkpoints go to `ray.storage_path` (shared storage such as s3:// or NFS on a
real cluster) and metrics to `mlflow.tracking_uri` or $MLFLOW_TRACKING_URI.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir, when not pip-installed

from pareto_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
