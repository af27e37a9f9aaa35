"""The names recmf gives MLflow things: tags on runs, the run's model, its split artifact."""

KIND_TAG = "recmf_kind"  # "train" on training runs
BUNDLE_TAG = "recmf_bundle"  # "1" once a run's bundle is fully logged
PARENT_ENV = "RECMF_PARENT_RUN_ID"  # set by recmf.cli.MLflowSweepParent: trials nest under it
INTERRUPTED_TAG = "recmf_interrupted"  # the phase a SIGINT/SIGTERM stopped; "resumed" after
MODEL_NAME = "model"  # the run's MLflow model; its artifacts/bundle is the run's one bundle
SPLIT_PATH = "split/split.npz"  # the run's split, its own artifact (not in the model)
DATASET_CONTEXT = "training"
