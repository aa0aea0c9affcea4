"""Scan the dataset folder into results/data/manifest.tsv (rule manifest)."""

from actionrec.manifest import class_names, write_classes
from actionrec.logs import logged
from actionrec.manifest import build_manifest
from actionrec.tables import write_tsv

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]) as log:
    manifest = build_manifest(sm.params.root, sm.params.class_index, tuple(sm.params.extensions))
    write_tsv(manifest, sm.output.manifest)
    write_classes(class_names(manifest), sm.output.classes)
    log.info("%d clips in %d classes", len(manifest), manifest["class"].nunique())
