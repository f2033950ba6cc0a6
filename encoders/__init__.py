"""crossbit.encoders: image and text encoders, hash heads, losses, datasets, training, evaluation."""
