"""The valetkey command."""

def main() -> None:
    raise SystemExit("not yet")
