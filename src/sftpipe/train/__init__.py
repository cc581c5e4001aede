"""Supervised fine-tuning pieces: batches (`data`), the Trainer subclass (`trainer`), model setup (`load`), LoRA
dropout, checkpoint markers and what happens around `Trainer.train()` (`lifecycle`). The stage is
`sftpipe.stages.train`; runs are read and written through `sftpipe.runs`."""
