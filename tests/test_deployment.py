"""The deployment artefacts, each checked by the tool that will read it, and pgqd behaving as they assume:
systemd units (systemd-analyze), Kubernetes manifests (the Kubernetes schema, the KEDA query run on a real
database), the Dockerfile (statically: no container engine here) and pgqd as PID 1 of a PID namespace, the
Grafana dashboard and alert rules (promtool, and every metric they name scraped from a real daemon), and
producers enqueueing through PgBouncer in transaction-pooling mode."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tomllib
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from pgqd import Client, JobSpec
from pgqd.config.load import parse_config
from pgqd.config.model import WorkersConfig
from pgqd.daemon.supervisor.main import STOP_MARGIN
from tests.support.artefacts import (
    DEPLOY,
    KUBERNETES,
    REPO,
    SYSTEMD,
    by_kind,
    copy_sources,
    dashboard_queries,
    kubernetes_documents,
    load_dashboard,
    missing,
    one,
    parse_dockerfile,
    parse_unit,
    promql_metric_names,
    require_tool,
    rule_expressions,
    scraped_sample_names,
    systemd_seconds,
)
from tests.support.daemon import Daemon, daemon_config, free_port, http_get, wait_for
from tests.support.deploy_app import ORPHAN_SLEEP
from tests.support.sandboxes import (
    PgBouncer,
    PidOneDaemon,
    command_line,
    namespace_pid,
    processes_in_namespace_of,
)
from tests.support.waiting import wait_until

DEFAULT_SHUTDOWN = WorkersConfig().shutdown_timeout
UNITS = ("pgqd.service", "pgqd@.service")

# Entrypoints of tests/support/deploy_app.py, added to the test daemon's config.
DEPLOY_ENTRYPOINTS = """
[entrypoints.succeed]
handler = "tests.support.deploy_app:succeed"

[entrypoints.pause]
handler = "tests.support.deploy_app:pause"

[entrypoints.fail]
handler = "tests.support.deploy_app:fail"
retry = { max_attempts = 2, initial = "50ms", jitter = false }

[entrypoints.orphan]
handler = "tests.support.deploy_app:spawn_orphan"
"""


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Daemons a test started; each is stopped (by its pid) at the end."""
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.stop(timeout=15)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"queue{len(list(tmp_path.glob('queue*.toml')))}.toml"
    path.write_text(text)
    return path


# --- systemd ---------------------------------------------------------------------------------------------------
def unit(name: str) -> dict[str, dict[str, list[str]]]:
    return parse_unit((SYSTEMD / name).read_text())


def verify_problems(systemd_analyze: str, unit_dir: Path, names: list[str]) -> list[str]:
    """What ``systemd-analyze verify`` reports about these units. It exits 0 on many real errors (an unknown
    key, a bad value: "ignoring"), so any line that names one of the units counts as a problem too."""
    done = subprocess.run(
        [systemd_analyze, "verify", "--man=no", *(str(unit_dir / name) for name in names)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )
    stems = [name.removesuffix(".service").rstrip("@") for name in names]
    lines = (done.stdout + done.stderr).splitlines()
    problems = [line for line in lines if any(stem in line for stem in stems)]
    if done.returncode != 0:
        problems.append(f"exit status {done.returncode}: {done.stderr.strip()}")
    return problems


def units_for_checking(tmp_path: Path) -> Path:
    """Copies of the units whose ExecStart runs a stub: systemd-analyze insists that the binary exists, and
    /usr/bin/pgqd does not on a test machine."""
    stub = tmp_path / "bin" / "pgqd"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        assert "ExecStart=/usr/bin/pgqd " in text
        (unit_dir / name).write_text(text.replace("ExecStart=/usr/bin/pgqd ", f"ExecStart={stub} "))
    return unit_dir


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    systemd_analyze = require_tool("systemd-analyze")
    unit_dir = units_for_checking(tmp_path)
    assert verify_problems(systemd_analyze, unit_dir, list(UNITS)) == []
    # The same check catches real mistakes: a misspelt value, which systemd only warns about, and a key.
    for name, broken in (("pgqd.service", "KillMode=mixd"), ("pgqd@.service", "Typ=notify")):
        text = (unit_dir / name).read_text()
        good = broken.replace("mixd", "mixed").replace("Typ=", "Type=")
        (unit_dir / name).write_text(text.replace(good, broken))
        assert verify_problems(systemd_analyze, unit_dir, [name]), f"systemd-analyze missed {broken}"
        (unit_dir / name).write_text(text)


def test_systemd_units_are_sandboxed(tmp_path: Path) -> None:
    systemd_analyze = require_tool("systemd-analyze")
    unit_dir = units_for_checking(tmp_path)
    for name in UNITS:
        checked = subprocess.run(
            [systemd_analyze, "security", "--offline=true", "--threshold=20", "--no-pager", str(unit_dir / name)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", checked.stdout)
        assert exposure is not None, checked.stdout + checked.stderr
        # The threshold is in tenths of the exposure level shown (0.0 safe ... 10.0 unsafe).
        assert checked.returncode == 0, f"{name}: exposure {exposure.group(1)} is above 2.0\n{checked.stdout}"
        assert float(exposure.group(1)) <= 2.0


def test_systemd_unit_matches_how_the_daemon_runs() -> None:
    service = unit("pgqd.service")

    def get(key: str) -> str:
        return one(service, "Service", key)

    assert get("Type") == "notify"
    assert get("NotifyAccess") == "main"
    exec_start = get("ExecStart").split()
    assert exec_start == ["/usr/bin/pgqd", "--config", "/etc/pgqd/queue.toml"]
    assert get("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert get("KillSignal") == "SIGTERM"
    assert get("KillMode") == "mixed", "SIGTERM must reach the supervisor only, which drains its workers"
    # systemd's SIGKILL must never come before pgqd's own drain deadline (shutdown_timeout + the margin).
    assert systemd_seconds(get("TimeoutStopSec")) > DEFAULT_SHUTDOWN + STOP_MARGIN + 10
    assert get("Restart") == "on-failure"
    assert systemd_seconds(get("RestartSec")) > 0
    # The supervisor pings every half of WatchdogSec from a loop that turns at least every second.
    assert systemd_seconds(get("WatchdogSec")) >= 10
    assert (get("User"), get("Group")) == ("pgqd", "pgqd")
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectControlGroups": "yes",
    }.items():
        assert get(key) == value, key
    assert set(get("RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    text = (SYSTEMD / "pgqd.service").read_text()
    assert "shutdown_timeout" in text, "TimeoutStopSec must be explained in terms of shutdown_timeout"


def test_template_unit_differs_from_the_plain_one_only_in_its_instance() -> None:
    plain, template = unit("pgqd.service"), unit("pgqd@.service")
    assert one(template, "Service", "ExecStart") == "/usr/bin/pgqd --config /etc/pgqd/%i.toml"
    assert one(template, "Service", "EnvironmentFile") == "-/etc/pgqd/%i.env"
    assert "%i" in one(template, "Unit", "Description")
    for section in plain:
        instance_specific = {"Description", "ExecStart", "EnvironmentFile"}
        left = {k: v for k, v in plain[section].items() if k not in instance_specific}
        right = {k: v for k, v in template[section].items() if k not in instance_specific}
        assert left == right, f"[{section}] of pgqd@.service drifted from pgqd.service"


# --- Kubernetes --------------------------------------------------------------------------------------------------
def test_kubernetes_manifests_validate_against_the_kubernetes_schema() -> None:
    try:
        import kubernetes_validate
    except ImportError:
        missing("the kubernetes-validate package (the dev extra)")
    checked = []
    for path, document in kubernetes_documents():
        if document["kind"] == "Kustomization" or "." in document["apiVersion"].split("/")[0]:
            continue  # kustomize's own file and custom resources: checked below
        for version in ("1.27", kubernetes_validate.latest_version()):
            try:
                kubernetes_validate.validate(document, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                name = f"{path.relative_to(REPO)} ({document['kind']}, Kubernetes {version})"
                pytest.fail(f"{name} {where}: {exc.message}")
        checked.append(document["kind"])
    assert sorted(checked) == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Secret"]
    # Strict validation has teeth: a misspelt field is rejected.
    deployment = by_kind("Deployment")
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 60
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def test_kustomization_applies_every_manifest_but_the_optional_ones() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    listed = set(kustomization["resources"])
    top_level = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == top_level
    optional = {path.name for path in (KUBERNETES / "optional").glob("*.yaml")}
    assert optional == {"hpa.yaml", "secret.example.yaml"}
    kinds = [yaml.safe_load((KUBERNETES / name).read_text())["kind"] for name in listed]
    # Two autoscalers on one Deployment would fight: the default set has KEDA's only.
    assert kinds.count("ScaledObject") == 1
    assert "HorizontalPodAutoscaler" not in kinds


def test_deployment_wires_config_secret_probes_and_grace_period() -> None:
    deployment, config_map = by_kind("Deployment"), by_kind("ConfigMap")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config = parse_config(config_map["data"]["queue.toml"])
    # Probes come from the kubelet, outside the pod's loopback.
    assert config.metrics.listen == "0.0.0.0:9464"
    assert config.database.dsn is None, "the DSN belongs in the Secret, not the ConfigMap"
    assert "processes" in tomllib.loads(config_map["data"]["queue.toml"])["workers"], "CPU count is the node's"
    assert pod["terminationGracePeriodSeconds"] > config.workers.shutdown_timeout + STOP_MARGIN + 10
    assert container["args"] == ["--config", "/etc/pgqd/queue.toml"]
    (dsn,) = [env for env in container["env"] if env["name"] == "PGQD_DSN"]
    assert dsn["valueFrom"]["secretKeyRef"] == {"name": "pgqd-database", "key": "dsn"}
    secret = yaml.safe_load((KUBERNETES / "optional" / "secret.example.yaml").read_text())
    assert secret["metadata"]["name"] == "pgqd-database"
    assert "dsn" in secret["stringData"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": 9464}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}, probe
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes[mounts["/etc/pgqd"]]["configMap"]["name"] == config_map["metadata"]["name"]
    assert "emptyDir" in volumes[mounts["/tmp"]], "the read-only root needs a writable /tmp for the metrics files"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for kind in ("PodDisruptionBudget", "PodMonitor"):
        assert by_kind(kind)["spec"]["selector"]["matchLabels"].items() <= labels.items(), kind


def test_custom_resources_have_the_fields_their_operators_require() -> None:
    deployment = by_kind("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]

    monitor = by_kind("PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in {port["name"] for port in container["ports"]}
    assert endpoint["path"] == "/metrics"
    # The alerts select job="pgqd": the PodMonitor takes the job name from this pod label.
    assert pod_labels[monitor["spec"]["jobLabel"]] == "pgqd"

    scaled = by_kind("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]
    assert (target.get("kind", "Deployment"), target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "postgresql"
    metadata = trigger["metadata"]
    assert metadata["connectionFromEnv"] in {env["name"] for env in container["env"]}
    assert float(metadata["targetQueryValue"]) > 0
    assert all(isinstance(value, str) for value in metadata.values()), "KEDA trigger metadata values are strings"

    hpa = yaml.safe_load((KUBERNETES / "optional" / "hpa.yaml").read_text())
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


async def test_keda_query_counts_the_jobs_that_could_run_now(db_dsn: str) -> None:
    query = by_kind("ScaledObject")["spec"]["triggers"][0]["metadata"]["query"]
    conn = await asyncpg.connect(db_dsn)
    try:
        plan = await conn.fetch("EXPLAIN " + query)
        assert plan, "EXPLAIN returned no plan"
        client = Client(conn)
        await client.enqueue_many([JobSpec("mail") for _ in range(3)])
        later = await client.enqueue_many([JobSpec("mail", execute_after=timedelta(hours=1)) for _ in range(3)])
        running = await client.enqueue("mail")
        held = await client.enqueue("mail")
        # One deferred job comes due; one job runs; one is held for an operator. Neither of the last two counts.
        await conn.execute("UPDATE pgqd_jobs SET execute_after = now() - interval '1 second' WHERE id = $1", later[0])
        await conn.execute("UPDATE pgqd_jobs SET status = 'picked', picked_at = now() WHERE id = $1", running)
        await conn.execute("UPDATE pgqd_jobs SET status = 'failed' WHERE id = $1", held)
        assert await conn.fetchval("SELECT count(*) FROM pgqd_jobs WHERE status = 'deferred'") == 3
        assert await conn.fetchval(query) == 4
    finally:
        await conn.close()


# --- Dockerfile and PID 1 --------------------------------------------------------------------------------------
def test_dockerfile_is_multi_stage_non_root_and_execs_pgqd() -> None:
    # No container engine runs on the test machines: the Dockerfile is checked by reading it.
    stages = parse_dockerfile((DEPLOY / "Dockerfile").read_text())
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    builder, runtime = stages[0], stages[-1]
    assert builder.name
    assert all("slim" in stage.base for stage in stages)
    copied = [i.arguments.split() for i in runtime.all("COPY")]
    assert any(f"--from={builder.name}" in words for words in copied), "the runtime copies the builder's output"
    assert not runtime.all("RUN") or all("pip install" not in i.arguments for i in runtime.all("RUN"))
    user = runtime.last("USER")
    assert user is not None, "the runtime stage must switch to a non-root user"
    assert user.arguments.split(":")[0] not in ("root", "0")
    entrypoint, cmd = runtime.last("ENTRYPOINT"), runtime.last("CMD")
    assert entrypoint is not None
    assert cmd is not None
    # Exec form: pgqd itself is PID 1 and gets the SIGTERM, with no shell in between to swallow it.
    assert entrypoint.exec_form() == ["pgqd"]
    assert cmd.exec_form() == ["--config", "/etc/pgqd/queue.toml"]
    assert [i.arguments for i in runtime.all("EXPOSE")] == ["9464"]
    path = next(i.arguments for i in runtime.all("ENV") if "PATH=" in i.arguments)
    venv = next(words[-1] for words in copied if f"--from={builder.name}" in words)
    assert f"PATH={venv}/bin:" in path, "the copied virtualenv's pgqd must be on PATH"
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    for instruction in builder.all("COPY"):
        for source in copy_sources(instruction):
            assert (REPO / source.rstrip("/")).exists(), source
            assert f"!{source.rstrip('/')}" in {line.rstrip("/") for line in ignored}, f"{source} is ignored"
    # The parser tells the shell form apart (a shell as PID 1 would not pass SIGTERM on).
    (shell_form,) = parse_dockerfile("FROM scratch\nENTRYPOINT pgqd --config x\n")
    entry = shell_form.last("ENTRYPOINT")
    assert entry is not None
    assert entry.exec_form() is None


@pytest.fixture
def unshare() -> str:
    path = require_tool("unshare")
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("a new PID namespace needs root")
        pytest.skip("a new PID namespace needs root")
    return path


@pytest.mark.slow
async def test_pgqd_as_pid_1_runs_jobs_reaps_orphans_and_stops_cleanly_on_sigterm(
    db_dsn: str, tmp_path: Path, daemons: list[Daemon], unshare: str
) -> None:
    config = daemon_config(processes=2, shutdown_timeout="5s", extra=DEPLOY_ENTRYPOINTS)
    daemon = PidOneDaemon(write_config(tmp_path, config), db_dsn, unshare).start()
    daemons.append(daemon)
    daemon.wait_ready()
    init = daemon.pid
    assert namespace_pid(init) == 1
    assert "pgqd" in command_line(init)
    workers = daemon.worker_pids()
    assert len(workers) == 2

    conn = await asyncpg.connect(db_dsn)
    try:
        await Client(conn).enqueue_many([JobSpec("succeed") for _ in range(20)] + [JobSpec("orphan")] * 3)

        def orphans() -> list[Any]:
            return [p for p in processes_in_namespace_of(init) if p.command == f"sleep {ORPHAN_SLEEP}"]

        # The shells exit at once; their sleeps are re-parented to the namespace's init: pgqd's supervisor.
        adopted = wait_for(lambda: [p for p in orphans() if p.ppid == init], timeout=20, what="adopted orphans")
        assert adopted
        await wait_until(
            lambda: conn.fetchval("SELECT count(*) = 23 FROM pgqd_log WHERE status = 'successful'"),
            timeout=20,
            what="23 jobs done",
        )
        wait_for(lambda: not any(p.state != "Z" for p in orphans()), timeout=10, what="the orphans to exit")

        def zombies() -> list[Any]:
            return [p for p in processes_in_namespace_of(init) if p.state == "Z"]

        # Reaped as they exit (SIGCHLD wakes the supervisor loop): none stays a zombie.
        wait_for(lambda: not zombies(), timeout=3, what=f"the zombies to be reaped: {zombies()}")
        assert not orphans()
    finally:
        await conn.close()

    inside = {p.pid for p in processes_in_namespace_of(init)}
    assert {init, *workers} <= inside
    os.kill(init, signal.SIGTERM)  # from outside the namespace, as a container runtime does
    assert daemon.wait(timeout=20) == 0, daemon.log_text()[-3000:]
    assert not processes_in_namespace_of(init)
    assert not [pid for pid in inside if command_line(pid)], "processes of the namespace outlived it"
    # The supervisor drained and reaped its workers itself: nothing was left for the kernel to kill.
    exited = [e for e in daemon.events() if e.get("event") == "worker exited" and e.get("reason") == "stop"]
    assert len(exited) == 2, daemon.log_text()[-3000:]
    assert not daemon.has_event("worker died")


# --- Grafana and Prometheus ------------------------------------------------------------------------------------
def dashboard_metric_names() -> set[str]:
    dashboard = load_dashboard(DEPLOY / "grafana/pgqd.json")
    return set().union(*(promql_metric_names(query) for query in dashboard_queries(dashboard)))


def alert_rules() -> dict[str, str]:
    return rule_expressions(yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text()))


def test_promql_names_are_read_from_code_not_from_strings() -> None:
    expr = 'sum by (le) (rate(pgqd_job_duration_seconds_bucket{outcome="pgqd_not_a_metric"}[5m])) / pgqd_x:rate5m'
    assert promql_metric_names(expr) == {"pgqd_job_duration_seconds_bucket", "pgqd_x:rate5m"}


def test_dashboard_covers_throughput_failures_latency_queue_and_workers() -> None:
    dashboard = load_dashboard(DEPLOY / "grafana/pgqd.json")
    assert dashboard["uid"]
    assert dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        assert panel["type"] == "row" or panel["targets"], f"panel {panel['title']!r} has no query"
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
    queries = "\n".join(dashboard_queries(dashboard))
    assert re.search(r"sum by \(outcome\) \(rate\(pgqd_jobs_completed_total", queries)
    assert 'outcome=~"exception|timeout|held"' in queries
    for histogram in ("pgqd_job_duration_seconds_bucket", "pgqd_job_pickup_latency_seconds_bucket"):
        assert re.search(rf"histogram_quantile\(0\.95, sum by \((?:entrypoint, )?le\) \(rate\({histogram}", queries)
    assert {
        "pgqd_queue_depth",
        "pgqd_oldest_job_age_seconds",
        "pgqd_worker_restarts_total",
        "pgqd_workers_running",
    } <= dashboard_metric_names()
    # Every daemon reports the same database-wide queue figures: summing them over daemons would be wrong.
    assert not re.search(r"sum(?: by \([^)]*\))? \(pgqd_(queue_depth|oldest_job_age_seconds)", queries)


def test_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    promtool = require_tool("promtool")
    folder = DEPLOY / "prometheus"
    for command in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run([promtool, *command], cwd=folder, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    rules = alert_rules()
    tested = set(re.findall(r"alertname: (\w+)", (folder / "alerts_test.yml").read_text()))
    assert set(rules) == tested, "every alert needs a unit test in alerts_test.yml"
    used = set().union(*(promql_metric_names(expr) for expr in rules.values()))
    assert {"pgqd_oldest_job_age_seconds", "pgqd_jobs_completed_total", "pgqd_worker_restarts_total"} <= used
    assert "pgqd_workers_running" in used
    assert any(re.search(r"\bup\{", expr) for expr in rules.values()), "an alert for a daemon that is down"


STALE_JOB = """
INSERT INTO pgqd_jobs (entrypoint, status, worker_id, picked_at, attempts)
VALUES ('succeed', 'picked', 987654321, now() - interval '1 hour', 1)
"""

SCHEDULE = """
[schedules.tick]
cron = "* * * * * *"
entrypoint = "succeed"
"""


@pytest.mark.slow
async def test_every_metric_the_dashboard_and_alerts_use_is_served(
    db_dsn: str, tmp_path: Path, daemons: list[Daemon]
) -> None:
    wanted = dashboard_metric_names() | set().union(*(promql_metric_names(e) for e in alert_rules().values()))
    port = free_port()
    scraped: set[str] = set()

    def served(names: set[str]) -> bool:
        status, text = http_get(port, "/metrics", timeout=5)
        assert status == 200
        scraped.update(scraped_sample_names(text))
        return names <= scraped

    conn = await asyncpg.connect(db_dsn)
    try:
        # A job whose worker vanished without a trace: the fleet's stale-job rescue finds it.
        await conn.execute(STALE_JOB)
        config = daemon_config(processes=2, worker_timeout="4s", metrics_port=port, extra=DEPLOY_ENTRYPOINTS + SCHEDULE)
        daemon = Daemon(write_config(tmp_path, config), db_dsn).start()
        daemons.append(daemon)
        daemon.wait_ready()
        wait_for(lambda: served({"pgqd_jobs_rescued_total"}), timeout=15, what="the stale job's rescue", interval=0.2)
        # A crashed worker, counted as a restart (after the rescue, so that its count was published first).
        victim = daemon.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(set(daemon.worker_pids()) - {victim}) == 2, timeout=15, what="a replacement worker")
        await Client(conn).enqueue_many(
            [JobSpec("succeed") for _ in range(30)]
            + [JobSpec("fail"), JobSpec("fail"), JobSpec("pause", "2.5"), JobSpec("nobody_serves_this")]
        )
        wait_for(lambda: served(wanted), timeout=30, what=f"the metrics {sorted(wanted - scraped)}", interval=0.5)
        await wait_until(
            lambda: conn.fetchval("SELECT count(*) = 2 FROM pgqd_log WHERE status = 'exception'"),
            timeout=15,
            what="both failing jobs to fail for good",
        )
    finally:
        await conn.close()
    assert {"pgqd_jobs_completed_total", "pgqd_job_duration_seconds_bucket", "pgqd_queue_depth"} <= wanted


# --- PgBouncer ---------------------------------------------------------------------------------------------------
@pytest.fixture
def pgbouncer(pg_server: str) -> Iterator[PgBouncer]:
    binary = require_tool("pgbouncer")
    if "host=/" in pg_server and os.geteuid() == 0 and not os.environ.get("CI"):
        # PgBouncer must drop root, and the embedded server's socket folder is private to that server's own user.
        pytest.skip("PgBouncer cannot reach the embedded server's private socket when run as root")
    with PgBouncer(binary, pg_server).running() as bouncer:
        yield bouncer


@pytest.fixture
async def bounced_pool(db_dsn: str, pgbouncer: PgBouncer) -> AsyncIterator[Any]:
    database = db_dsn.rsplit("/", 1)[1].split("?")[0]
    # Transaction pooling hands each transaction to any server connection: no named prepared statements.
    pool = await asyncpg.create_pool(pgbouncer.dsn(database), statement_cache_size=0, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def test_producers_enqueue_through_pgbouncer_in_transaction_mode(bounced_pool: Any, db_dsn: str) -> None:
    client = Client(bounced_pool)
    singles = [await client.enqueue("mail", {"n": n}, priority=n % 3) for n in range(25)]
    batch = await client.enqueue_many([JobSpec("mail", {"n": n}) for n in range(200)])
    deferred = await client.enqueue("mail", execute_after=timedelta(minutes=5), dedupe_key="once")
    assert await client.enqueue("mail", dedupe_key="once", on_conflict="skip") is None
    async with bounced_pool.acquire() as conn, conn.transaction():
        # Joining the caller's transaction works too: a transaction keeps its server connection.
        in_transaction = await Client(conn).enqueue("mail", "inside")
    states = await client.status([*singles, deferred])
    assert {state.status for state in states.values()} == {"queued", "deferred"}
    direct = await asyncpg.connect(db_dsn)
    try:
        landed = await direct.fetch("SELECT id, entrypoint FROM pgqd_jobs ORDER BY id")
    finally:
        await direct.close()
    ids = [row["id"] for row in landed]
    assert ids == sorted([*singles, *batch, deferred, in_transaction])
    assert {row["entrypoint"] for row in landed} == {"mail"}
