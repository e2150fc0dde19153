"""Using a trained model: loading it, stylizing images and files, export, and Gatys transfer."""
