"""The benchmark (`python -m zdd.bench`, `make bench`): smooth deployment against what people do
today, and what the driver costs beside the engine.

Sections, one module each, all on fresh `local` stacks of the sample site (`stacks`), destroyed
with every process they started at the end, also on failure:

- `sidebyside`: each phase's `pulumi up` by hand through the CLI against the same phase through
  `zdd`, the difference split into gate, config, engine and reads;
- `strategies`: three ways to ship v1 -> v2 under the same load probe (`load`: `BENCH_RATE`
  requests/s, default 300, one in ten a write) on the same database (`database`: grown to the
  smallest of `BENCH_SIZES_MB` with filler rows): a maintenance stop, `pulumi up` in place, and
  the smooth deployment; per strategy the probe's figures (`metrics`);
- `scaling`: at each size of `BENCH_SIZES_MB` (default "10,100"; MiB), the clone's copy timed
  against a file copy, what the primary itself needs to change (`primary`: migrate, start,
  verify), and a smooth deployment's read-only window against it, with a profile of the window
  from the engine's events (`engine`: a stack that times every call the driver makes on it);
- `frontdoor`: wrk through HAProxy and straight to the origin.

`__main__` writes `bench/results.json`, `bench/timeline.png` (one panel per strategy) and
`bench/timeline-scaling.png` (the smooth deployment at each size); `report` adds the machine,
the goals met or missed, and a summary on stderr.
"""
