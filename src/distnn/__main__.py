import sys

from distnn.cli import main

sys.exit(main())
