# Human action recognition in video: from a folder of clips (UCF101's layout,
# or the built-in synthetic demo) through HDF5 shards, an honest split, a
# learning-rate search, a backbone comparison and transfer learning to an
# evaluated clip classifier. The rules are in rules/, the code in scripts/.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema.yaml")


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/pretrain.smk"
include: "rules/features.smk"
include: "rules/search.smk"
include: "rules/train.smk"
include: "rules/compare.smk"
include: "rules/evaluate.smk"


rule all:
    default_target: True
    input:
        final_targets(),
