"""`python -m signalcraft_deploy`: the signalcraft-deploy command, where no console script is on
PATH."""

from signalcraft_deploy.cli import main

main()
