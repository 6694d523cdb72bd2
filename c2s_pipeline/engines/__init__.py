"""The engines a notebook can call, each of them a command's whole work without the command line:

    from c2s_pipeline.engines.precompute import build_store      # the teacher store of a split
    from c2s_pipeline.engines.train import train_student         # a student from that store (resumes)
    from c2s_pipeline.engines.evaluate import evaluate_run       # sIoU / uIoU / hIoU (evaluate_clip_dense: CLIP's)
    from c2s_pipeline.engines.cross import evaluate_run_on       # against another dataset's vocabulary

Each takes a Params and paths and writes what its command writes; `stages/` only maps flags onto them.
"""
