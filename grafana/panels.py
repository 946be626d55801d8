"""Small constructors over grafana-foundation-sdk, so each dashboard module reads as a list.

Every panel and query here uses the dashboard's data-source variable (``${datasource}``, type
prometheus), every panel gets an explicit id, and every query an explicit refId, so the JSON is
stable from one build to the next.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grafana_foundation_sdk.builders import bargauge, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders.common import (
    GraphThresholdsStyleConfig,
    ReduceDataOptions,
    StackingConfig,
    VizLegendOptions,
)
from grafana_foundation_sdk.builders.dashboard import (
    DatasourceVariable,
    IntervalVariable,
    QueryVariable,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.models.common import (
    BarGaugeDisplayMode,
    BigValueColorMode,
    BigValueGraphMode,
    GraphDrawStyle,
    GraphThresholdsStyleMode,
    LegendDisplayMode,
    LegendPlacement,
    StackingMode,
    VisibilityMode,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
"""Every panel and query reads the data source the dashboard's ``$datasource`` variable picks."""

Steps = Sequence[tuple[float | None, str]]
"""Threshold steps: (value from which a color applies, color); the first value is None (-inf)."""


class Ids:
    """Hands out panel ids, 1, 2, 3, ... per dashboard."""

    def __init__(self) -> None:
        self.last = 0

    def __call__(self) -> int:
        self.last += 1
        return self.last


def prom(expr: str, legend: str = "", *, ref: str = "A", instant: bool = False, fmt: str = "") -> Dataquery:
    query = Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        query = query.legend_format(legend)
    query = query.instant() if instant else query.range()
    if fmt:
        query = query.format(PromQueryFormat(fmt))
    return query


def thresholds(steps: Steps) -> ThresholdsConfig:
    return (
        ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for value, color in steps])
    )


def _common(panel: Any, pid: int, title: str, description: str, unit: str, w: int, h: int) -> Any:
    return (
        panel.id(pid)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(w)
        .height(h)
    )


def timeseries_panel(
    pid: int,
    title: str,
    description: str,
    queries: Sequence[Dataquery],
    *,
    unit: str = "s",
    steps: Steps | None = None,
    bands: bool = False,
    stacked: bool = False,
    bars: bool = False,
    w: int = 12,
    h: int = 8,
    min_value: float | None = None,
    overrides: Sequence[tuple[str, Sequence[tuple[str, Any]]]] = (),
) -> timeseries.Panel:
    """A time series; ``steps`` draw threshold lines, or shaded bands when ``bands``."""
    panel = _common(timeseries.Panel(), pid, title, description, unit, w, h)
    for query in queries:
        panel = panel.with_target(query)
    panel = panel.legend(
        VizLegendOptions()
        .show_legend(True)
        .display_mode(LegendDisplayMode.TABLE)
        .placement(LegendPlacement.BOTTOM)
        .calcs(["lastNotNull", "max"])
    )
    if steps is not None:
        mode = GraphThresholdsStyleMode.LINE_AND_AREA if bands else GraphThresholdsStyleMode.DASHED
        panel = panel.thresholds(thresholds(steps)).thresholds_style(GraphThresholdsStyleConfig().mode(mode))
    if stacked:
        panel = panel.stacking(StackingConfig().mode(StackingMode.NORMAL)).fill_opacity(40)
    else:
        panel = panel.fill_opacity(0 if not bars else 60)
    if bars:
        panel = panel.draw_style(GraphDrawStyle.BARS)
    if min_value is not None:
        panel = panel.min(min_value)
    for name, properties in overrides:
        panel = panel.override_by_name(name, [DynamicConfigValue(id_val=k, value=v) for k, v in properties])
    return panel


def stat_panel(
    pid: int,
    title: str,
    description: str,
    queries: Sequence[Dataquery],
    *,
    unit: str = "s",
    steps: Steps = ((None, "blue"),),
    mappings: dict[str, tuple[str, str]] | None = None,
    w: int = 6,
    h: int = 4,
) -> stat.Panel:
    """A single value (the last one), colored by ``steps``; ``mappings``: value -> (text, color)."""
    panel = _common(stat.Panel(), pid, title, description, unit, w, h)
    for query in queries:
        panel = panel.with_target(query)
    panel = (
        panel.thresholds(thresholds(steps))
        .color_mode(BigValueColorMode.BACKGROUND)
        .graph_mode(BigValueGraphMode.NONE)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if mappings:
        results = {v: ValueMappingResult(text=text, color=color) for v, (text, color) in mappings.items()}
        panel = panel.mappings([ValueMap(options=results)])
    return panel


def bargauge_panel(
    pid: int,
    title: str,
    description: str,
    queries: Sequence[Dataquery],
    *,
    unit: str = "s",
    steps: Steps = ((None, "blue"),),
    w: int = 8,
    h: int = 8,
    min_value: float | None = 0,
) -> bargauge.Panel:
    """Horizontal bars, one per series, from instant queries: figures side by side."""
    panel = _common(bargauge.Panel(), pid, title, description, unit, w, h)
    for query in queries:
        panel = panel.with_target(query)
    panel = (
        panel.thresholds(thresholds(steps))
        .display_mode(BarGaugeDisplayMode.GRADIENT)
        .orientation(VizOrientation.HORIZONTAL)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if min_value is not None:
        panel = panel.min(min_value)
    return panel


def state_panel(
    pid: int, title: str, description: str, query: Dataquery, *, w: int = 24, h: int = 8
) -> statetimeline.Panel:
    """Success (1) and failure (0) over time, one lane per series."""
    panel = _common(statetimeline.Panel(), pid, title, description, "none", w, h).with_target(query)
    mapping = {
        "1": ValueMappingResult(text="ok", color="green"),
        "0": ValueMappingResult(text="failed", color="red"),
    }
    return panel.mappings([ValueMap(options=mapping)]).show_value(VisibilityMode.NEVER).merge_values(True)


def table_panel(
    pid: int,
    title: str,
    description: str,
    columns: Sequence[tuple[Dataquery, str, str, Steps | None]],
    *,
    w: int = 24,
    h: int = 9,
) -> table.Panel:
    """One row per label set, one column per instant query: (query, header, unit, steps).

    The queries are merged on their labels; each value column is renamed and colored by an
    override on its field name (``Value #<refId>``).
    """
    panel = _common(table.Panel(), pid, title, description, "none", w, h)
    for query, _header, _unit, _steps in columns:
        panel = panel.with_target(query)
    panel = panel.with_transformation(DataTransformerConfig(id_val="merge", options={})).with_transformation(
        DataTransformerConfig(id_val="organize", options={"excludeByName": {"Time": True}})
    )
    for query, header, unit, steps in columns:
        properties = [
            DynamicConfigValue(id_val="displayName", value=header),
            DynamicConfigValue(id_val="unit", value=unit),
        ]
        if steps is not None:
            properties += [
                DynamicConfigValue(id_val="thresholds", value=thresholds(steps).build()),
                DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"}),
            ]
        panel = panel.override_by_name(f"Value #{query.build().ref_id}", properties)
    return panel


def datasource_variable() -> DatasourceVariable:
    return (
        DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .current(VariableOption(selected=True, text="Prometheus", value="prometheus"))
    )


def label_variable(name: str, selector: str, *, multi: bool) -> QueryVariable:
    """A variable listing the values of label ``name`` on ``selector``; multi-valued with All."""
    variable = (
        QueryVariable(name)
        .label(name.capitalize())
        .datasource(DATASOURCE)
        .query(f"label_values({selector}, {name})")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(multi)
    )
    if multi:
        # ".*" instead of Grafana's default (an alternation of every value): shorter queries.
        variable = variable.all_value(".*").current(VariableOption(selected=True, text="All", value="$__all"))
    return variable


def window_variable() -> IntervalVariable:
    """``$window``: how far back rates and counts look (probes run about once a minute)."""
    return (
        IntervalVariable("window")
        .label("Window")
        .values("5m,15m,30m,1h,3h,6h")
        .current(VariableOption(selected=True, text="15m", value="15m"))
    )
