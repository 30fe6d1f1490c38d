"""Training: config, trainer, optimizer set-up and densification strategies."""
