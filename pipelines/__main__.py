import sys

from pipelines.extract import main

sys.exit(main())
