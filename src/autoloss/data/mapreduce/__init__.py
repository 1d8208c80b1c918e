"""``prepare`` as a map-reduce over its input files, on this process, threads or Ray.

The serial ``prepare`` reads its inputs one after the other in one process
(:mod:`autoloss.data.parse_pass`, :mod:`autoloss.data.finalize`). Here the same work is cut
into tasks of one input file (or one field) each, run by a
:class:`~autoloss.data.mapreduce.executors.TaskExecutor` (``prepare --executor ray``: Ray tasks)
and merged in input order, so that the dataset is byte for byte the serial one:

* :mod:`~autoloss.data.mapreduce.plan`: the phases and the driver;
* :mod:`~autoloss.data.mapreduce.layout`: what the tasks share, the scratch files of an input;
* :mod:`~autoloss.data.mapreduce.scan`, :mod:`~autoloss.data.mapreduce.count`,
  :mod:`~autoloss.data.mapreduce.reduce`, :mod:`~autoloss.data.mapreduce.encode`: the tasks;
* :mod:`~autoloss.data.mapreduce.executors`: where the tasks run.
"""
