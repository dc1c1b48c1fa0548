"""`manage.py seedgallery`: fill the shop's sample gallery with images from the local placeholder backend.

For keyless development and demos (`make run` runs it with `--if-empty`); in production the operator uploads
real samples in the admin instead. The images come from the same `PlaceholderBackend` the bot uses with
IMAGE_BACKEND=placeholder, so they look exactly like what `/generate` posts without an OpenAI key.
"""

import asyncio

from django.core.management.base import BaseCommand

from discordbot.images.placeholder import PlaceholderBackend
from storefront.gallery import sample_image_add
from storefront.models import SampleImage

SAMPLES = (
    ("A lighthouse on a cliff at dawn, watercolour", "1024x1024", "medium"),
    ("A cat astronaut floating above the Earth, digital painting", "1024x1024", "high"),
    ("A cosy reading nook with a sleeping dog, isometric pixel art", "1024x1024", "low"),
    ("A rainy neon street in Tokyo at night, cinematic", "1024x1024", "medium"),
)


class Command(BaseCommand):
    help = "Add placeholder sample images to the storefront's gallery (keyless development and demos)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--if-empty", action="store_true", help="Do nothing when the gallery has any image.")

    def handle(self, *args, if_empty: bool, **options) -> None:
        if if_empty and SampleImage.objects.exists():
            self.stdout.write("The gallery already has images; nothing added.")
            return
        backend = PlaceholderBackend()
        start = SampleImage.objects.count()
        for offset, (prompt, size, quality) in enumerate(SAMPLES):
            data = asyncio.run(backend.generate(prompt=prompt, size=size, quality=quality, user_hash="gallery"))
            sample_image_add(data=data, prompt=prompt, size=size, quality=quality, sort_order=start + offset)
        self.stdout.write(f"Added {len(SAMPLES)} placeholder images to the gallery.")
