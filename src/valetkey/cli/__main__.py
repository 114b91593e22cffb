"""python -m valetkey.cli"""

from valetkey.cli import main

main()
