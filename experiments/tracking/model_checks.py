"""A logged MLflow model checked before anything of it is loaded: only what loads without pickle.

What is refused and why (a pickled model runs its code as it loads), and the
`MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false` every command runs with: docs/faults-and-security.md
(Never unpickle).
"""

from __future__ import annotations

import posixpath

from experiments.errors import ConfigError

#: MLflow's switch for unpickling models; the project's commands and the servers they start
#: run with it "false" (experiments/__main__.py)
PICKLE_ENV = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
#: the flavors a project model has: MLflow's PyTorch flavor and its pyfunc entry point
FLAVORS = ("pytorch", "python_function")
PT2_FILE = "model.pt2"  # the pt2 serialization's file in the flavor's data folder
PICKLE_FILES = {"model.pth": "pickle", "pickle_module_info.txt": "pickle"}


def refusal(flavors: dict, files: list[str]) -> str | None:
    """Why a model with these MLmodel `flavors` and these data-folder `files` must not be
    loaded, in words; None when it is a pt2 PyTorch model without bundled code."""
    other = sorted(set(flavors) - set(FLAVORS))
    if other:
        return f"its flavor {', '.join(other)} is not one the project loads (only pytorch, pt2)"
    torch_flavor = flavors.get("pytorch")
    if not torch_flavor:
        return "it has no pytorch flavor (the project loads only PyTorch models saved as pt2)"
    pyfunc = flavors.get("python_function") or {}
    if pyfunc.get("loader_module", "mlflow.pytorch") != "mlflow.pytorch":
        return f"its python_function loader is {pyfunc['loader_module']!r}, not mlflow.pytorch"
    if torch_flavor.get("code") or pyfunc.get("code"):
        return "it bundles Python code (code paths), which loading it would run"
    names = {posixpath.basename(f) for f in files}
    pickled = sorted(names & set(PICKLE_FILES))
    if pickled:
        return (
            f"its serialization format is 'pickle' ({', '.join(pickled)}): loading it would "
            "run whatever code the pickle holds; the project loads only 'pt2' models"
        )
    if PT2_FILE not in names:
        return f"its serialization format is not 'pt2' (no {PT2_FILE} among {sorted(names)})"
    return None


def check_loadable(uri: str, model_id: str, reference: str) -> None:
    """Refuse (ConfigError, exit 2) LoggedModel `model_id` unless it loads without pickle.
    Reads only its MLmodel file and the names of its files: nothing of it is unpickled."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from experiments.tracking import store

    mlflow.set_tracking_uri(uri)  # where models:/ is looked up
    client = store.client(uri)
    try:
        flavors = mlflow.models.get_model_info(f"models:/{model_id}").flavors
        data = (flavors.get("pytorch") or {}).get("model_data", "data")
        files = [f.path for f in client.list_logged_model_artifacts(model_id, data)]
    except (MlflowException, OSError) as exc:
        raise ConfigError(f"{reference}: its MLmodel file cannot be read ({exc})") from exc
    problem = refusal(flavors, files)
    if problem:
        raise ConfigError(f"{reference} (models:/{model_id}) is refused: {problem}")
