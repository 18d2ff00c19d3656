"""Pages and figures shared by run and sweep reports.

``figures``: drawing and saving figures (PNG, SVG, CSV); ``pages``: the HTML of the run and sweep
report pages; ``summary``: the header of a run report; ``guide``: what each built-in probe is called
and the order it is read in; ``grouping``: which runs are replicates of one setting. Running probes
is ``arprobe.probes.runner``.
"""
