import sys

from arprobe.cli.main import main

sys.exit(main())
