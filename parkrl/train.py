"""Command-line entry: `python -m parkrl.train recipe=grpo trainer.total_steps=20 rollout.n=8`.

Hydra composes the typed schema (parkrl.config.Config) with the chosen recipe and the command
line overrides; a misspelled key or a wrong type fails here, before any worker starts.
"""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from parkrl.config import Config, ConfigError

CONF_DIR = str(Path(__file__).with_name("conf"))
ConfigStore.instance().store(name="parkrl_schema", node=Config)


def to_config(cfg: DictConfig) -> Config:
    """The composed Hydra config as a typed Config object."""
    return OmegaConf.to_object(cfg)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="parkrl")
def main(cfg: DictConfig) -> None:
    from parkrl.controller import train

    try:
        train(to_config(cfg))
    except ConfigError as e:
        print(f"parkrl: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("parkrl: interrupted; every worker was shut down", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
