"""Scores and statistics: PSNR/SSIM, paired tests, the tuning choice rule."""
