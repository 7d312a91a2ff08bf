from trainer.cli import entrypoint

entrypoint()
