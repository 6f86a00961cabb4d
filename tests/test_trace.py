from dynviz.trace import ExitRecord, Trace


def test_trace_round_trips_through_json(cascade, photo):
    trace = cascade.analyze(photo)
    again = Trace.from_json(trace.to_json())
    assert again == trace
    assert all(isinstance(r, ExitRecord) for r in again.records)


def test_summary_row_has_the_cli_columns_and_the_exit_taken(cascade, photo):
    trace = cascade.analyze(photo, {"tau_1": 0.0})
    row = trace.summary()
    for column in ("input", "model", "label", "label_index", "confidence", "flops", "flops_full", "latency_ms"):
        assert column in row
    assert (row["exit"], row["exit_name"]) == (0, cascade.stages[0].name)
    assert row["flops"] < row["flops_full"]
