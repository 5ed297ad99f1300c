"""TensorBoard summaries of a run beyond its scalars and images, as protos: the HPARAMS experiment (column list),
session start and end, and the CUSTOM SCALARS layout; and the small event file that holds them.

They are built here because TensorBoard's public writers cannot say what aelab needs without TensorFlow: the hparams
plugin's `summary` and the custom-scalars `summary.pb` import it, and `summary_v2` has no `differs` flag (the swept
keys first) and writes no session end (the run's status). aelab.hparams decides what goes into them.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

# How a run ended -> TensorBoard's status. TensorBoard 2.21 has no "aborted": an interrupted run (Ctrl-C, SIGTERM)
# writes no end, so it shows "Unknown" like a killed one until `resume=` finishes it (TensorBoard keeps the first end
# a run writes: an end written now would hide the resumed run's)
STATUS = {"succeeded": "STATUS_SUCCESS", "failed": "STATUS_FAILURE"}


def _type(values: list):
    from tensorboard.plugins.hparams import api_pb2

    kinds = {bool if isinstance(v, bool) else float if isinstance(v, (int, float)) else str for v in values}
    if kinds == {bool}:
        return api_pb2.DATA_TYPE_BOOL
    if kinds == {float}:
        return api_pb2.DATA_TYPE_FLOAT64
    return api_pb2.DATA_TYPE_STRING


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                                             and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def experiment_pb(session, curated: dict[str, type]):
    """The column list: swept keys (differs=True: TensorBoard sorts and ticks them first), then the curated keys,
    and the declared metrics. Built only from what all jobs of a sweep share, so every job writes the same one."""
    from google.protobuf import struct_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    infos = []
    for key in session.swept:
        values = session.domains.get(key)
        own = session.params.get(key)
        if values is not None and own is not None and not any(_same(own, v) for v in values):
            values = None  # the sweep's list does not hold this run's value as typed: no filter that would hide it
        info = api_pb2.HParamInfo(name=key, differs=True,
                                  type=_type(values if values else [own] if own is not None else [""]))
        if values:
            info.domain_discrete.CopyFrom(struct_pb2.ListValue(values=[_value(v) for v in dict.fromkeys(values)]))
        infos.append(info)
    for key, kind in curated.items():
        if key not in session.swept:
            infos.append(api_pb2.HParamInfo(name=key, type=_type([True] if kind is bool else [0.0] if kind in
                                                                 (int, float) else [""])))
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(group="", tag=tag)) for tag in session.metrics]
    data = plugin_data_pb2.HParamsPluginData(experiment=api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics))
    return _summary(metadata.EXPERIMENT_TAG, metadata.create_summary_metadata(data), metadata.NULL_TENSOR)


def _value(v):
    from google.protobuf import struct_pb2

    if isinstance(v, bool):
        return struct_pb2.Value(bool_value=v)
    if isinstance(v, (int, float)):
        return struct_pb2.Value(number_value=float(v))
    return struct_pb2.Value(string_value=str(v))


def session_start_pb(session, start_time: float | None = None):
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    info = plugin_data_pb2.SessionStartInfo(group_name=session.name, start_time_secs=start_time or time.time())
    for key, value in session.params.items():
        info.hparams[key].CopyFrom(_value(value))
    data = plugin_data_pb2.HParamsPluginData(session_start_info=info)
    return _summary(metadata.SESSION_START_INFO_TAG, metadata.create_summary_metadata(data), metadata.NULL_TENSOR)


def session_end_pb(state: str, end_time: float | None = None):
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    status = api_pb2.Status.Value(STATUS[state])
    data = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=end_time or time.time()))
    return _summary(metadata.SESSION_END_INFO_TAG, metadata.create_summary_metadata(data), metadata.NULL_TENSOR)


# CUSTOM SCALARS: train and val of each measure in one chart (TIME SERIES shows one tag per card); the model's terms
# follow, one chart each, titled by their declaration
LAYOUT = {
    "learning curves (epoch means: train vs val)": [
        ("loss: each model's own objective (units differ between model families)", r"^(train|val)/loss$"),
        ("bce per pixel: the same measure for every model", r"^(train|val)/bce$"),
        ("mse per pixel: the same measure for every model", r"^(train|val)/mse$"),
        ("psnr (dB) against the main baseline", r"^(train|val)/psnr$|^val/psnr_baseline$"),
        ("ssim", r"^(train|val)/ssim$"),
    ],
    "training steps (every trainer.log_every_n_steps)": [
        ("loss per step", r"^train/loss_step$"),
        ("terms per step", r"^train/.*_step$"),
    ],
}


def layout(terms=()) -> dict[str, list[tuple[str, str]]]:
    """The CUSTOM SCALARS categories: LAYOUT with a chart per declared term (train and val) after the shared ones."""
    first, *rest = LAYOUT
    charts = [(f"{t.name}: {t.description}", rf"^(train|val)/{re.escape(t.name)}$") for t in terms
              if {"train", "val"} & set(t.stages)]
    return {first: [*LAYOUT[first], *charts], **{k: LAYOUT[k] for k in rest}}


def layout_pb(terms=()):
    """The layout summary, built as `custom_scalar.summary.pb` builds it (that function imports TensorFlow)."""
    from tensorboard.compat.proto import tensor_pb2, tensor_shape_pb2
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    categories = [layout_pb2.Category(title=title, closed=i > 0, chart=[
        layout_pb2.Chart(title=chart, multiline=layout_pb2.MultilineChartContent(tag=[regex]))
        for chart, regex in charts]) for i, (title, charts) in enumerate(layout(terms).items())]
    tensor = tensor_pb2.TensorProto(dtype="DT_STRING", string_val=[layout_pb2.Layout(category=categories)
                                                                   .SerializeToString()],
                                    tensor_shape=tensor_shape_pb2.TensorShapeProto())
    return _summary(metadata.CONFIG_SUMMARY_TAG, metadata.create_summary_metadata(), tensor)


def _summary(tag: str, summary_metadata, tensor):
    from tensorboard.compat.proto import summary_pb2

    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, metadata=summary_metadata, tensor=tensor)
    return summary


def write_summaries(log_dir: str | Path, summaries) -> None:
    """One small event file in `log_dir` (the run TensorBoard reads), holding `summaries` at step 0."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    Path(log_dir).mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(log_dir), filename_suffix=".aelab")
    try:
        for summary in summaries:
            writer.add_event(event_pb2.Event(wall_time=time.time(), step=0, summary=summary))
    finally:
        writer.close()
