"""One module per driver family, each importing its driver: a module here is imported only once a target of
its driver has been recognised (see ``pgqd.producers.targets``)."""
