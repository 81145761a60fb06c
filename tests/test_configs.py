import hydra
import pytest
from hydra.core.global_hydra import GlobalHydra
from lightning import LightningDataModule, LightningModule, Trainer
from omegaconf import DictConfig

from tests.conftest import CONF_DIR, compose_config


def test_train_config_composes_and_instantiates(cfg_train: DictConfig):
    assert cfg_train.model.net.crop_size == cfg_train.data.crop_size
    assert isinstance(hydra.utils.instantiate(cfg_train.data), LightningDataModule)
    assert isinstance(hydra.utils.instantiate(cfg_train.model), LightningModule)
    trainer = hydra.utils.instantiate(cfg_train.trainer, logger=False)
    assert isinstance(trainer, Trainer) and trainer.max_epochs == 1
    for name in ("model_checkpoint", "early_stopping"):
        callback = cfg_train.callbacks[name]
        assert callback.monitor == "val/auroc" and callback.mode == "max"


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF_DIR / "trainer").glob("*.yaml")))
def test_every_trainer_preset_composes(preset, tmp_path):
    paths = [f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/out"]
    cfg = compose_config("train.yaml", [f"trainer={preset}", *paths])
    assert cfg.trainer._target_.endswith("Trainer")
    if preset in {"cpu", "fast"}:
        assert isinstance(hydra.utils.instantiate(cfg.trainer, logger=False), Trainer)
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(
    "experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
)
def test_every_experiment_composes(experiment):
    cfg = compose_config("train.yaml", [f"experiment={experiment}"])
    assert cfg.trainer.max_epochs >= 1
    GlobalHydra.instance().clear()


def test_evaluate_and_generate_configs_compose():
    assert compose_config("evaluate.yaml").model_ref == "champion"
    assert compose_config("generate.yaml").synth._target_.endswith("generate_dataset")
    GlobalHydra.instance().clear()


def test_the_full_photo_pool_is_one_option_away():
    from deepfakenet.data.sources import EMBEDDED, FULL, select_photos
    from deepfakenet.data.synth import generate_dataset

    cfg = compose_config("generate.yaml", ["synth=full"])
    GlobalHydra.instance().clear()
    assert (
        cfg.synth.pool == FULL and cfg.synth.n_real > compose_config("generate.yaml").synth.n_real
    )
    GlobalHydra.instance().clear()
    assert len(select_photos(FULL)) > len(select_photos(EMBEDDED))
    # Every key of the option is an argument of the generator (nothing silently ignored).
    import inspect

    arguments = set(inspect.signature(generate_dataset).parameters)
    assert set(cfg.synth) - {"_target_"} <= arguments


@pytest.mark.parametrize(
    "experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
)
def test_generalisation_config_composes_for_every_experiment(experiment):
    from deepfakenet.evaluation import ProtocolSettings

    cfg = compose_config("generalisation.yaml", [f"experiment={experiment}"])
    train_cfg = compose_config("train.yaml", [f"experiment={experiment}"])
    # The recipe each fold trains is exactly the experiment's training recipe.
    for group in ("data", "model", "trainer", "calibration"):
        assert cfg[group] == train_cfg[group], group
    assert cfg.register is False and cfg.synth._target_.endswith("generate_dataset")
    settings = ProtocolSettings.from_config(cfg.protocol)
    assert {"jpeg95", "jpeg75", "jpeg50", "downscale0.5", "blur1"} <= set(settings.perturbations)
    assert set(settings.source_conditions) <= set(settings.perturbations)
    GlobalHydra.instance().clear()


@pytest.mark.parametrize("name", ["train.yaml", "evaluate.yaml", "retrain.yaml", "rollback.yaml"])
def test_every_job_reads_the_registry_with_interpolations_resolved(name, monkeypatch):
    # conf/registry's tracking_uri is ${oc.env:MLFLOW_TRACKING_URI,sqlite:///...}: a job handed
    # the unresolved text would point MLflow at a store named "${oc.env:...}".
    from deepfakenet import registry

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/from-env.db")
    root = ["paths.root_dir=/srv/deepfakenet"]
    cfg = compose_config(name, root)
    assert registry.registry_config(cfg).tracking_uri == "sqlite:////tmp/from-env.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    resolved = registry.registry_config(compose_config(name, root))
    assert resolved.tracking_uri == "sqlite:////srv/deepfakenet/mlflow.db"
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(
    ("name", "schema"), [("retrain.yaml", "RetrainSchema"), ("rollback.yaml", "RollbackSchema")]
)
def test_the_shipped_job_configs_match_their_schemas(name, schema, tmp_path, monkeypatch):
    from deepfakenet import config

    monkeypatch.setenv("DEEPFAKENET_IMAGE_RETENTION_DAYS", "7")
    paths = [f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/out"]
    settings = config.validate(compose_config(name, paths), getattr(config, schema), name)
    assert settings.registry.model_name == "deepfakenet"
    assert settings.lock_file == f"{tmp_path}/.retrain.lock"
    if name == "retrain.yaml":  # values typed and resolved: the environment's string is a float
        assert settings.store.image_retention_days == 7.0
        assert settings.promotion.feedback.min_items >= 1
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(
    ("name", "override", "key"),
    [
        ("retrain.yaml", "+store.image_retension_days=3", "store.image_retension_days"),
        ("retrain.yaml", "+registry.trackinguri=x", "registry.trackinguri"),
        ("retrain.yaml", "+promotion.feedback.min_itmes=3", "promotion.feedback.min_itmes"),
        ("rollback.yaml", "+notify.service_ulr=http://x", "notify.service_ulr"),
        ("rollback.yaml", "+dry_run=true", "dry_run"),
    ],
)
def test_unknown_keys_of_groups_and_nested_nodes_are_refused(name, override, key, tmp_path):
    from deepfakenet import config
    from deepfakenet.errors import ConfigError

    paths = [f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}/out", override]
    schema = config.RetrainSchema if name == "retrain.yaml" else config.RollbackSchema
    with pytest.raises(ConfigError, match=f"unknown key '{key}'"):
        config.validate(compose_config(name, paths), schema, name)
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(
    ("trainer", "processes"),
    [
        ({"devices": 1}, 1),
        ({"devices": 2}, 2),
        ({"devices": [0]}, 1),  # one GPU picked by its id
        ({"devices": "0,"}, 1),
        ({"devices": "0,1"}, 2),
        ({"devices": "2"}, 2),
        ({"devices": -1}, None),  # every device of the host
        ({"devices": "auto", "accelerator": "cpu"}, 1),
        ({"devices": "auto", "accelerator": "gpu"}, None),
        ({"devices": 4, "num_nodes": 2}, 8),
        ({"devices": 1, "strategy": "ddp"}, 1),
    ],
)
def test_the_processes_a_trainer_starts(trainer, processes):
    from omegaconf import OmegaConf

    from deepfakenet.errors import ConfigError
    from deepfakenet.pipeline import require_one_process, trainer_processes

    assert trainer_processes(OmegaConf.create(trainer)) == processes
    cfg = OmegaConf.create({"trainer": trainer})
    if processes == 1:
        require_one_process(cfg, "a loop of trainings")
    else:
        with pytest.raises(ConfigError, match="a loop of trainings trains inside the job"):
            require_one_process(cfg, "a loop of trainings")


def test_the_shipped_ddp_preset_is_two_processes_and_the_others_one(tmp_path):
    from deepfakenet.pipeline import trainer_processes

    for preset, processes in (("ddp", 2), ("cpu", 1), ("fast", 1), ("gpu", 1)):
        cfg = compose_config("train.yaml", [f"trainer={preset}", f"paths.root_dir={tmp_path}"])
        assert trainer_processes(cfg.trainer) == processes, preset
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(
    ("uri", "server_decides"),
    [
        ("http://mlflow.internal:5000", True),
        ("https://mlflow.example.com", True),
        ("sqlite:////srv/deepfakenet/mlflow.db", False),
        ("postgresql+psycopg://mlflow@db/mlflow", False),
    ],
)
def test_a_tracking_server_chooses_the_artifact_root(uri, server_decides):
    from deepfakenet.registry import artifact_location_for

    expected = None if server_decides else "/srv/deepfakenet/mlartifacts"
    assert artifact_location_for(uri, "/srv/deepfakenet/mlartifacts") == expected
