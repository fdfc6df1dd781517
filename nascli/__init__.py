"""nascli: search object-detector necks, heads and backbones for your own dataset."""

__version__ = "0.1.0"
