"""``python -m benchmarks``: the harness of benchmarks/run.py."""

from benchmarks.run import main

raise SystemExit(main())
