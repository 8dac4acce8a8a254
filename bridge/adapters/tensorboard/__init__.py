"""``tensorboard:LOGDIR`` — TensorBoard event files as a source (see ``reader``)."""
