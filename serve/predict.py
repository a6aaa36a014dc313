"""`python -m serve.predict`: the predict stage, the same entry point as `socialalign predict`."""

if __name__ == "__main__":
    from cluster.cli import module_main

    module_main("serve.predict")
