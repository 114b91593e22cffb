"""The SDK: client, identity discovery, token cache, single flight. See ``valetkey``."""
