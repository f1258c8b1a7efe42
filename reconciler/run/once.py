"""One pass of the node reconciler: recover, observe, plan, execute, check.

This wires the pure modules (``policy``, ``plan``) to the ones that act (``observe``,
``execute``); it holds no decisions of its own. A pass always finishes an interrupted earlier
pass first, and ends by reading back what it wrote and planning again, so "converged" means
what the next pass would see, not what this one hoped to have done.

Every line a pass logs carries ``node`` and ``revision`` (``logs.fields``): each action's result
as it comes (``execute``, with ``certificate``, ``component`` or ``file``, ``action`` and
``reason``), each warning or error finding, and one line when it ends.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable

from reconciler import logs
from reconciler.decide import caplan, plan
from reconciler.model import actions, hoststate, kubeadm, nodespec, paths
from reconciler.node import execute, observe, transaction
from reconciler.node import host as host_

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PassResult:
    spec: nodespec.NodeSpec
    recovered: tuple[str, ...]
    planned: actions.Plan
    results: tuple[actions.Result, ...]
    after: actions.Plan  # what the next pass would do
    error: str | None = None  # the pass could not run at all
    node_name: str | None = None
    # the gate said no (no rotation slot): the planned actions were not executed
    withheld: str | None = None
    observed: hoststate.Observed | None = None  # the host as the final plan saw it

    @property
    def findings(self) -> list[actions.Finding]:
        """What the next pass sees, plus the restarts this pass left to the operator."""
        # static pods owed with restart none are tracked in the state file, so the next pass
        # reports exactly those still running an old certificate; the kubelet's is not
        owed = [
            f
            for f in self.planned.findings
            if f.reason == actions.Reason.RESTART_REQUIRED and f.target not in kubeadm.COMPONENTS
        ]
        return list(self.after.findings) + owed

    @property
    def failures(self) -> list[str]:
        out = [f"{r.action.kind} {r.action.target}: {r.message}" for r in self.results if not r.ok]
        out += [
            f"{f.target}: {f.detail}"
            for f in self.after.findings
            if f.severity == actions.Severity.ERROR
        ]
        if self.error:
            out.append(self.error)
        return out

    @property
    def ca_renewed(self) -> list[str]:
        """CAs this pass renewed from their keys here (offline): the other nodes need them."""
        return [
            r.action.target
            for r in self.results
            if r.ok and r.action.kind == actions.ActionKind.RENEW_CA
        ]

    @property
    def converged(self) -> bool:
        return (
            not self.failures
            and self.withheld is None
            and (not self.after.actions or self.spec.paused)
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "node": self.node_name,
            "revision": self.spec.revision,
            "converged": self.converged,
            "recovered": list(self.recovered),
            "results": [r.to_dict() for r in self.results],
            "restarts": [r.restart for r in self.results if r.restart is not None],
            "remaining": [a.to_dict() for a in self.after.actions],
            "findings": [f.to_dict() for f in self.findings],
            "failures": self.failures,
            "otherNodes": caplan.other_nodes(self.ca_renewed) if self.ca_renewed else None,
        }


# Called with the plan, under the node lock, before anything is executed: returns None to go
# ahead, or why the plan is withheld (the node daemon takes its rotation slot here).
Gate = Callable[[actions.Plan, hoststate.Observed], str | None]
# What the cluster publishes about the CAs, given this node's observation (the node daemon's
# ConfigMap, or a --ca-bundle file matched to this node's CAs); None: offline, no cluster.
Publication = Callable[[hoststate.Observed], hoststate.Published | None]


def run_once(
    host: host_.Host,
    spec: nodespec.NodeSpec,
    node_name: str | None,
    clock: Callable[[], dt.datetime],
    settings: execute.Settings,
    gate: Gate | None = None,
    publication: Publication | None = None,
) -> PassResult:
    started = time.monotonic()
    with logs.fields(node=node_name, revision=spec.revision):
        result = _pass(host, spec, node_name, clock, settings, gate, publication)
        with logs.fields(node=result.node_name):
            _log(result, time.monotonic() - started)
    return result


def _pass(
    host: host_.Host,
    spec: nodespec.NodeSpec,
    node_name: str | None,
    clock: Callable[[], dt.datetime],
    settings: execute.Settings,
    gate: Gate | None,
    publication: Publication | None = None,
) -> PassResult:
    empty = actions.Plan((), ())
    if not host.root.is_dir():
        return PassResult(
            spec,
            (),
            empty,
            (),
            empty,
            f"host root {host.root} does not exist or is not a directory",
        )
    try:
        with host.lock(paths.LOCK), host.pinned():
            return _locked_pass(host, spec, node_name, clock, settings, gate, publication)
    except host_.HostError as e:
        return PassResult(spec, (), empty, (), empty, str(e))


def _log(result: PassResult, seconds: float) -> None:
    """A line per warning or error finding, then the pass's outcome (``execute`` logged each
    action's result as it came)."""
    for note in result.recovered:
        log.warning("recovered: %s", note)
    for f in result.findings:
        level = {
            actions.Severity.ERROR: logging.ERROR,
            actions.Severity.WARNING: logging.WARNING,
        }.get(f.severity, logging.DEBUG)
        log.log(
            level,
            "%s: %s: %s",
            f.reason,
            f.target,
            f.detail,
            extra={"finding": str(f.reason), "target": f.target},
        )
    if result.error:
        log.error("%s", result.error)
    if result.withheld:
        log.info("waiting: %s", result.withheld)
    outcome = "converged" if result.converged else "not converged"
    log.info(
        "pass %s: %d action(s) in %.2fs",
        outcome,
        len(result.results),
        seconds,
        extra={"converged": result.converged, "seconds": round(seconds, 3)},
    )


def recover_only(host: host_.Host) -> list[str]:
    """Finish an interrupted pass and nothing else (used when the policy is invalid)."""
    if not host.root.is_dir():
        return []
    try:
        with host.lock(paths.LOCK):
            return execute.recover(host)
    except (transaction.TransactionError, host_.HostError) as e:
        return [f"cannot recover an interrupted pass: {e}"]


def _locked_pass(
    host: host_.Host,
    spec: nodespec.NodeSpec,
    node_name: str | None,
    clock: Callable[[], dt.datetime],
    settings: execute.Settings,
    gate: Gate | None,
    publication: Publication | None = None,
) -> PassResult:
    empty = actions.Plan((), ())
    try:
        recovered = execute.recover(host)
    except (transaction.TransactionError, host_.HostError) as e:
        return PassResult(spec, (), empty, (), empty, f"cannot recover an interrupted pass: {e}")
    if settings.stop.requested:
        return PassResult(spec, tuple(recovered), empty, (), empty, _interrupted(settings))
    observed = observe.observe(host, node_name)
    if publication is not None:
        observed = dataclasses.replace(observed, published=publication(observed))
    with logs.fields(node=node_name or observed.node_name):  # from the kubelet's certificate
        return _observed_pass(host, spec, observed, recovered, clock, settings, gate)


def _observed_pass(
    host: host_.Host,
    spec: nodespec.NodeSpec,
    observed: hoststate.Observed,
    recovered: list[str],
    clock: Callable[[], dt.datetime],
    settings: execute.Settings,
    gate: Gate | None,
) -> PassResult:
    first = plan.plan(spec, observed, clock())
    withheld = gate(first, observed) if gate is not None and first.actions else None
    if withheld is None and settings.stop.requested:  # e.g. during the gate's drain
        return PassResult(
            spec,
            tuple(recovered),
            first,
            (),
            first,
            _interrupted(settings),
            node_name=observed.node_name,
            observed=observed,
        )
    if withheld is not None:
        return PassResult(
            spec,
            tuple(recovered),
            first,
            (),
            first,
            node_name=observed.node_name,
            withheld=withheld,
            observed=observed,
        )
    written = observe.Written()
    results = execute.execute(host, spec, observed, first, clock(), settings, written)
    # Converged means what the next pass would see: what this one wrote is read back; bytes
    # other than those it built and verified (key against certificate, certificate against
    # CA) are parsed and verified again; the rest was just read.
    final = observe.refresh(host, observed, first, written)
    after = plan.plan(spec, final, clock())
    return PassResult(
        spec,
        tuple(recovered),
        first,
        tuple(results),
        after,
        _interrupted(settings) if settings.stop.requested else None,
        node_name=observed.node_name,
        observed=final,
    )


def _interrupted(settings: execute.Settings) -> str:
    return (
        f"interrupted by {settings.stop.name}: the step in flight was finished, manifests are "
        "back in place, restarts not done are owed to the next pass"
    )
