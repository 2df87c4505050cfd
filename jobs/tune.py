"""Ray job entrypoint for hyperparameter sweeps; the options are `pareto-ray tune`'s.

    ray job submit --working-dir . -- python jobs/tune.py --config jobs/configs/tune_quickstart.yaml \
        --set ray.storage_path=/mnt/shared/ray_results
    ray job submit --working-dir . -- python jobs/tune.py --resume /mnt/shared/ray_results/<sweep name>

Launched as a job, `ray.init()` joins the job's cluster (Ray sets RAY_ADDRESS).
Each Tune trial drives one Ray Train run; the sweep folder, the trials'
checkpoints and the best config go to `ray.storage_path`, which every node
must see (NFS, EFS, a shared volume), and metrics to `mlflow.tracking_uri` or
$MLFLOW_TRACKING_URI. A sweep whose job was stopped continues with --resume.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the uploaded working dir, when not pip-installed

from pareto_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
