"""Run the trainer CLI as in an environment where TensorFlow is not installed: ``python tests/no_tensorflow.py ARGS...``.

A finder at the front of ``sys.meta_path`` answers "no module named tensorflow" for it and its
submodules (so ``import tensorflow`` fails and ``find_spec`` sees nothing, as without the
package). At exit it prints ``TENSORFLOW_LOADED True|False`` on stderr.
"""
import sys


class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def main() -> None:
    sys.meta_path.insert(0, NoTensorFlow())
    sys.argv[0] = "trainer"
    from trainer.cli import app

    try:
        app()
        code = 0
    except SystemExit as done:
        code = done.code
    loaded = any(name == "tensorflow" or name.startswith("tensorflow.") for name in sys.modules)
    print(f"TENSORFLOW_LOADED {loaded}", file=sys.stderr)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
