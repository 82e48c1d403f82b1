"""Model stages: the shared device runtime (CPU workers make uint8 model inputs, the main process
runs the model) and the CLIP wrapper. torch and open_clip are imported only inside functions."""
