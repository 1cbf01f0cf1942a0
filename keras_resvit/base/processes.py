"""The processes of a multi-process run: joining them, which one this is, and barriers.

One training run may span several processes (one per host of a GPU cluster or TPU pod slice,
or several on one machine), on the engines Keras ships:

- JAX: `keras.distribution.initialize`, with the coordinator address, the number of processes
  and this process's id from `initialize`'s arguments or from the environment Keras reads
  (`KERAS_DISTRIBUTION_JOB_ADDRESSES`, `KERAS_DISTRIBUTION_NUM_PROCESSES`,
  `KERAS_DISTRIBUTION_PROCESS_ID`); on a Cloud TPU pod slice JAX finds them itself.
- TensorFlow: `tf.distribute.MultiWorkerMirroredStrategy` over the cluster that `TF_CONFIG`
  describes. TensorFlow needs it created before any other TensorFlow operation runs.

Process 0 (under TensorFlow the "chief" task, or worker 0 where there is none) writes the run's
files; the others compute the same steps. `process_count()` and `process_index()` join the
process group the environment describes on first use, so a script that sets the variables
needs no call of its own; a script that builds a model before reading any data calls
`initialize()` first.
"""

import json
import os

from keras_resvit.base.files import first_line
from keras_resvit.base.keras_fixes import patch_keras_fit
from keras_resvit.base.lazy import keras, tf
from keras_resvit.base.validation import check_int

ENVIRONMENT = (
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)
_state = {"strategy": None}
_TOO_LATE = (
    "must be called before any computation: call keras_resvit.training.initialize() (or "
    "keras.distribution.initialize()) at the top of the script, before building a model or "
    "reading data"
)


def _jax_initialized() -> bool:
    import jax

    return jax.distributed.is_initialized()


def _jax_detects_cluster() -> bool:
    """Whether JAX's own cluster detection (TPU pod slice, SLURM, Open MPI, Kubernetes) finds
    an environment; True where that cannot be asked, so that JAX decides."""
    try:
        from jax._src import clusters

        return any(kind.is_env_present() for kind in clusters.ClusterEnv._cluster_types)
    except (ImportError, AttributeError):
        return True


def _requested_processes(num_processes) -> int:
    if num_processes is not None:
        return num_processes
    value = os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "")
    try:
        count = int(value) if value else 1
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"KERAS_DISTRIBUTION_NUM_PROCESSES={value!r} must be a positive int.")
    return count


def _fix_random_seed(seed=0):
    """Sets the global random seed to `seed` unless one was set (`keras.utils.set_random_seed`).

    Joining a JAX process group, Keras otherwise draws one at random (the same in every
    process), and the TensorFlow part of it makes every tf.data shuffle and random draw of
    `kr.data.load_dataset` change from run to run: a run would not be reproducible from its
    `seed`, nor a resumed run the uninterrupted one."""
    from keras.src.utils import rng_utils

    if rng_utils.get_random_seed() is None:
        keras.utils.set_random_seed(seed)


def _initialize_jax(job_addresses, num_processes, process_id, explicit):
    """`explicit`: `initialize()` was called, so JAX may also detect a cluster itself (a Cloud
    TPU pod slice, SLURM); otherwise only `KERAS_DISTRIBUTION_NUM_PROCESSES` > 1 joins one."""
    if _jax_initialized():
        return
    count = _requested_processes(num_processes)
    if count == 1 and (not explicit or num_processes == 1):
        return
    if count == 1 and job_addresses is None and not _jax_detects_cluster():
        return  # nothing given, nothing to detect: one process, whenever it is called
    _fix_random_seed()
    try:
        keras.distribution.initialize(job_addresses, num_processes, process_id)
    except RuntimeError as error:
        if "before" in str(error):
            raise RuntimeError(f"The process group {_TOO_LATE}.") from None
        raise
    except ValueError as error:
        # Nothing given and no cluster that JAX detects: a single process.
        if count == 1 and "coordinator_address" in str(error):
            return
        raise ValueError(
            f"joining a group of {count} processes failed ({first_line(error)}); each "
            "process needs the coordinator's address, job_addresses='host:port' (process 0's), "
            "the number of processes and its own process_id, as arguments or as "
            "KERAS_DISTRIBUTION_JOB_ADDRESSES, _NUM_PROCESSES and _PROCESS_ID."
        ) from None


def cluster_tasks(environ=os.environ) -> dict:
    """The tasks of the TensorFlow cluster in `TF_CONFIG` ({} without one): task type -> the
    number of tasks of that type."""
    text = environ.get("TF_CONFIG", "")
    if not text:
        return {}
    expected = (
        'expected JSON such as {"cluster": {"worker": ["host1:port", "host2:port"]}, '
        '"task": {"type": "worker", "index": 0}}'
    )
    try:
        config = json.loads(text)
        tasks = {kind: len(addresses) for kind, addresses in config["cluster"].items()}
        if not all(isinstance(a, list) for a in config["cluster"].values()):
            raise TypeError
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ValueError(f"TF_CONFIG={text!r} is not valid: {expected}.") from None
    task = config.get("task")
    kind = task.get("type") if isinstance(task, dict) else None
    index = task.get("index") if isinstance(task, dict) else None
    if (
        sum(tasks.values()) > 1
        and kind != "evaluator"
        and not (  # TF's evaluator is outside
            kind in tasks
            and isinstance(index, int)
            and not isinstance(index, bool)
            and 0 <= index < tasks[kind]
        )
    ):
        raise ValueError(
            f"TF_CONFIG={text!r} does not say which task of its cluster this process is: its "
            f'"task" must name a type of the cluster {sorted(tasks)} and an index within it; '
            f"{expected}."
        )
    return tasks


def _initialize_tensorflow():
    if _state["strategy"] is not None:
        return
    tasks = cluster_tasks()
    if tasks.get("chief", 0) + tasks.get("worker", 0) <= 1:
        return
    try:
        _state["strategy"] = tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as error:
        if "startup" in str(error):
            raise RuntimeError(f"MultiWorkerMirroredStrategy {_TOO_LATE}.") from None
        raise
    patch_keras_fit()


def initialize(job_addresses=None, num_processes=None, process_id=None) -> int:
    """Joins this process to the run's process group (once; later calls do nothing).

    Under JAX, calls `keras.distribution.initialize(job_addresses, num_processes,
    process_id)`; arguments left None come from `KERAS_DISTRIBUTION_*` in the environment, or
    on a Cloud TPU pod slice from JAX's own detection. The global random seed becomes 0
    unless one was set (`keras.utils.set_random_seed`), where Keras would draw one at random:
    tf.data shuffles and draws depend on it. Under TensorFlow, creates the
    `MultiWorkerMirroredStrategy` of the cluster in `TF_CONFIG` (the arguments must be None).
    Call it at the top of the script, before any model is built or data read.

    Args:
        job_addresses: the coordinator's "host:port" (process 0's), or every process's,
            comma-separated.
        num_processes: the number of processes.
        process_id: this process's index, 0 to `num_processes - 1`.

    Returns:
        The number of processes.

    Raises:
        ValueError: a bad argument, or arguments under TensorFlow (which reads `TF_CONFIG`).
        RuntimeError: called after the backend has already computed.

    Example:
    >>> from keras_resvit.base.processes import initialize
    >>> initialize()  # one process: nothing to join
    1
    """
    check_int("num_processes", num_processes, none_ok=True)
    check_int("process_id", process_id, minimum=0, none_ok=True)
    count = _requested_processes(num_processes)
    if process_id is not None and process_id >= count:
        what = (
            f"num_processes={num_processes}"
            if num_processes is not None
            else f"the {count} of KERAS_DISTRIBUTION_NUM_PROCESSES (unset: 1)"
        )
        raise ValueError(f"process_id={process_id} must be below {what}.")
    if job_addresses is not None and (
        not isinstance(job_addresses, str) or ":" not in job_addresses
    ):
        raise ValueError(
            f"job_addresses={job_addresses!r} must be a 'host:port' string (process 0's)."
        )
    name = keras.backend.backend()
    given = (job_addresses, num_processes, process_id) != (None, None, None)
    if name == "jax":
        _initialize_jax(job_addresses, num_processes, process_id, explicit=True)
    elif name == "tensorflow":
        if given:
            raise ValueError(
                "Under TensorFlow the process group comes from TF_CONFIG; pass no "
                "job_addresses, num_processes or process_id (or use KERAS_BACKEND=jax)."
            )
        _initialize_tensorflow()
    elif given and (num_processes or 1) > 1:
        raise ValueError(f"Several processes need the JAX or TensorFlow backend, not {name!r}.")
    return process_count()


def multi_worker_strategy():
    """TensorFlow's `MultiWorkerMirroredStrategy` of this run, or None (one process, or JAX)."""
    if keras.backend.backend() == "tensorflow":
        _initialize_tensorflow()
    return _state["strategy"]


def process_count() -> int:
    """The number of processes of the run (1 unless several were started)."""
    name = keras.backend.backend()
    if name == "jax":
        _initialize_jax(None, None, None, explicit=False)
        import jax

        return jax.process_count()
    strategy = multi_worker_strategy()
    if strategy is None:
        return 1
    tasks = cluster_tasks()
    return tasks.get("chief", 0) + tasks.get("worker", 0)


def process_index() -> int:
    """This process's index, 0 to `process_count() - 1`; 0 writes the run's files."""
    name = keras.backend.backend()
    if name == "jax":
        _initialize_jax(None, None, None, explicit=False)
        import jax

        return jax.process_index()
    strategy = multi_worker_strategy()
    if strategy is None:
        return 0
    resolver = strategy.cluster_resolver
    if resolver.task_type == "chief":
        return 0
    return resolver.task_id + cluster_tasks().get("chief", 0)


def host_cpu():
    """A scope that computes on this process's own CPU (input pipelines): `keras.device("cpu")`,
    except under JAX, whose "cpu" is the first CPU of the whole process group, another process's
    when several run, where its arrays could not be read back."""
    if keras.backend.backend() != "jax":
        return keras.device("cpu")
    import jax

    process_count()  # joins the process group the environment describes, before computing
    return jax.default_device(jax.local_devices(backend="cpu")[0])


def is_chief() -> bool:
    """Whether this process writes the run's files (process 0)."""
    return process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process of the run reaches the barrier `name` (no-op alone)."""
    if process_count() == 1:
        return
    if keras.backend.backend() == "jax":
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
        return
    strategy = multi_worker_strategy()
    ones = strategy.experimental_distribute_values_from_function(lambda _: tf.constant(1.0))
    strategy.reduce("SUM", ones, axis=None)
