"""Images: a node's store of read-only root filesystems, imported from OCI image layouts
and `docker save` archives (`lclusterd image import|ls|rm`), each later the lower layer of
its jobs' overlays.

    store.py     the store under <state-dir>/images: names, records, atomic install, lock
    importer.py  an image's tree built from its layers, digests checked
    layer.py     one layer applied safely (the rules are in its docstring)
    tree.py      directories reached one component at a time, never through a link
    paths.py     member names taken apart; whiteouts; the runtime's mount points (pure)
    streams.py   a layer's bytes hashed and decompressed in one pass
    sources.py   a directory or tar to import from; manifest.py, oci.py, docker.py: its formats
    config.py    the image's config: a job's defaults, and their merge with the job's own (pure)
    pack.py      a directory tree written as an OCI image layout (make rootfs, tests)
    cli.py       `lclusterd image ...`
"""
