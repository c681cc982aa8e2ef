from psipo.cli import run

run()
