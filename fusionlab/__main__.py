"""`python -m fusionlab` is the same as the `fusionlab` console script.

Stage processes are launched this way, so Lightning's DDP launcher can re-run the same
command line for every rank.
"""

import sys

from fusionlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
