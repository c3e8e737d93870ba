"""disdat-luigi: Disdat bundles, and pipe classes run in Docker containers as Luigi task chains."""
__version__ = "0.1.0"
