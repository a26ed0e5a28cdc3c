"""fusionlab: text- and depth-guided infrared-visible image fusion as a multi-stage Lightning pipeline.

Importing the package does nothing but define the version: heavy libraries load inside the
functions that need them, so the CLI answers fast.
"""

__version__ = "0.1.0"
