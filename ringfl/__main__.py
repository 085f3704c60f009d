from ringfl.cli import run

run()
