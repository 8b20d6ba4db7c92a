"""LoRA fine-tuning (``edgemed train``), read top to bottom in :mod:`edgemed.train.recipe`.

- ``config``: :class:`~edgemed.train.config.TrainConfig`, every option of a run (``edgemed train --help``).
- ``recipe``: :func:`~edgemed.train.recipe.train` (validate -> set up -> run -> clean up) and ``train_lora``.
- ``rundir``: the run folder, its record, checkpoints, the --resume/--force checks.
- ``data``: the train/eval questions, their encoding, the length-grouped order.
- ``loop``: the base model and its LoRA, the TrainingArguments, the Trainer subclass, the progress line.
- ``cpu``: what makes training fast on a CPU (dtypes, fp32 attention, a cheaper LoRA dropout).

Nothing heavy is imported here: ``edgemed.train.config`` loads without torch.
"""
