"""The placement settings each stage takes (no cluster needed): their defaults keep one-machine
behaviour, and each reaches the Ray call that places the work. Where the work really lands on a
cluster of several nodes is asserted by the other tests here, from Ray's state API."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cluster.config import ConfigError, load_config
from crawl_actors.config import CrawlConfig
from serve.app import build_app, serve_config_document
from serve.config import ServeConfig
from train_jobs.config import TrainConfig
from train_jobs.plan import StepPlan
from train_jobs.trainer import build_trainer


def test_defaults_keep_todays_placement() -> None:
    assert CrawlConfig().actor_scheduling == "DEFAULT"
    assert TrainConfig().placement_strategy == "PACK"  # Ray Train's own default
    serve = ServeConfig()
    assert serve.max_replicas_per_node is None and serve.proxy_location == "EveryNode"


def test_placement_values_are_checked_when_the_config_loads() -> None:
    with pytest.raises(ConfigError, match="actor_scheduling"):
        load_config(CrawlConfig, None, ["actor_scheduling=EVERYWHERE"])
    with pytest.raises(ConfigError, match="placement_strategy"):
        load_config(TrainConfig, None, ["placement_strategy=spread"])
    with pytest.raises(ConfigError, match="max_replicas_per_node"):
        load_config(ServeConfig, None, ["max_replicas_per_node=0"])


def test_the_trainers_placement_group_uses_the_strategy() -> None:
    config = TrainConfig(num_workers=2, placement_strategy="STRICT_SPREAD", effective_batch_size=2)
    plan = StepPlan(rows=4, world_size=2, micro_batch_size=1, accumulation=1, micro_batches_per_epoch=2,
                    total_steps=2, warmup_steps=0, bf16=False)
    dataset = SimpleNamespace(context=SimpleNamespace(enable_progress_bars=True))
    trainer = build_trainer(config, plan, dataset, {}, "/tmp/unused", "run", "/tmp/unused")
    assert trainer.scaling_config.placement_strategy == "STRICT_SPREAD"
    assert trainer.scaling_config.num_workers == 2


def test_serve_caps_replicas_per_node_and_places_proxies() -> None:
    config = ServeConfig(num_replicas=2, max_replicas_per_node=1, proxy_location="HeadOnly")
    generator = build_app(config)._bound_deployment.init_args[0]._bound_deployment
    assert generator._replica_config.max_replicas_per_node == 1
    assert serve_config_document(config, "serve.yaml")["proxy_location"] == "HeadOnly"
    default = build_app(ServeConfig())._bound_deployment.init_args[0]._bound_deployment
    assert default._replica_config.max_replicas_per_node is None
