"""The generalisation table of a training recipe: leave-one-out folds and perturbations.

    python benchmarks/generalisation.py                      # the default recipe
    python benchmarks/generalisation.py experiment=demo      # what `make demo` trains
    python benchmarks/generalisation.py experiment=generalise
    python benchmarks/generalisation.py --quick              # tiny data, seconds per fold

Trains one model per fold (everything; each fake family out; each real source out), so the full
table costs one training of the recipe per fold (nine on the embedded data). Prints the table
and the goal summary and logs both to MLflow (experiment ``deepfakenet-generalisation``) as
markdown and CSV.
Extra arguments are Hydra overrides of ``conf/generalisation.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from deepfakenet.evaluation import to_markdown
from deepfakenet.protocol import run_generalisation

ROOT = Path(__file__).resolve().parents[1]

#: Tiny data and one short epoch per fold: the protocol end to end in about a minute.
QUICK_OVERRIDES = [
    "synth.n_real=64",
    "synth.n_fake=64",
    "synth.min_size=32",
    "synth.max_size=48",
    # The photos bundled with installed wheels: no registry download, cheap to decode.
    "synth.sources=[skimage,matplotlib,sklearn,skimage_grey]",
    "trainer=fast",
    "trainer.max_epochs=1",
    "data.crop_size=32",
    # Whatever an experiment= overlay says: 32 px images must not be upsampled to be scored.
    "data.eval_crop_size=32",
    "data.batch_size=16",
    "data.num_workers=0",
    "data.val_fraction=0.25",
    "data.test_fraction=0.25",
    "protocol.num_workers=0",
    "protocol.families=[nearest_conv,pixel_shuffle]",
    "protocol.sources=[sklearn,matplotlib]",
    "callbacks.early_stopping.patience=1",
]


def compose_protocol(overrides: list[str], quick: bool, root: Path) -> DictConfig:
    """Compose ``conf/generalisation.yaml`` outside ``@hydra.main`` (paths set explicitly)."""
    paths = [f"paths.root_dir={root}", f"paths.output_dir={root}/outputs/generalisation"]
    if quick:
        paths.append(f"protocol.work_dir={root}/outputs/generalisation-quick")
        paths.append(f"protocol.report_dir={root}/reports/generalisation-quick")
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose(
            "generalisation.yaml", [*paths, *(QUICK_OVERRIDES if quick else []), *overrides]
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, short training")
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="where outputs/, reports/, mlflow.db go"
    )
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=demo")
    # Intermixed: `--quick` may come before or after the Hydra overrides.
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    overrides = list(args.overrides)
    if args.tracking_uri:
        overrides.append(f"registry.tracking_uri={args.tracking_uri}")
    cfg = compose_protocol(overrides, args.quick, args.root.resolve())
    result = run_generalisation(cfg)
    print()
    print(to_markdown(result.table))
    print(to_markdown(result.goals))
    print(
        f"{len(result.fold_runs)} folds in {result.seconds / 60:.1f} min; "
        f"MLflow run {result.run_id}; written to {result.report_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
