"""Lightning predict loops: synthesis of images and collection of activations."""
