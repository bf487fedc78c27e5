"""What runs in a worker process of the daemon: its main function (the engine on uvloop, its check-ins to the
supervisor) and the periodic duties of the lead worker (schedules, queue gauges, vacuum, the log's partitions and
rollup), each of one shape (``duties``)."""
