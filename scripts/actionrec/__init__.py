"""Human action recognition in video: the importable code behind the workflow."""

__version__ = "0.1.0"
