"""The parts of the distil stage (eztag.stages.distil runs them): training data, loss, training, selection."""
