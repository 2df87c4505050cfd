import sys

from pareto_ray.cli import main

sys.exit(main())
