"""A predictive-coding decoder of Fashion-MNIST."""
