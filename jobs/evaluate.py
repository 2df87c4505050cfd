"""Ray job entrypoint for evaluation; the options are `pareto-ray evaluate`'s.

    ray job submit --working-dir . -- python jobs/evaluate.py /shared/ray_results/<run>/checkpoint_... --split test

The checkpoint path must be readable from the node the job's driver runs on
(shared storage on a real cluster).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir, when not pip-installed

from pareto_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
