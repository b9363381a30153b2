"""What training, serving and eval share: labels, text handling, base encoders, the model bundle, the runtime."""
