// People page: confirm deletions; enrol from a snapshot of this browser's camera.
"use strict";
(function () {
  for (const form of document.querySelectorAll("form.delete-form")) {
    form.addEventListener("submit", (ev) => {
      const name = form.dataset.name;
      if (!window.confirm("Delete " + name + ", all their templates and their events? This cannot be undone.")) {
        ev.preventDefault();
        return;
      }
      form.querySelector('input[name="confirm"]').value = name;
    });
  }

  const video = document.getElementById("cam-video");
  const status = document.getElementById("cam-status");
  const snap = document.getElementById("cam-snap");
  document.getElementById("cam-start").addEventListener("click", async () => {
    try {
      video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 1280 } }, audio: false });
      await video.play();
      snap.disabled = false;
      status.textContent = "camera on";
    } catch (e) {
      status.textContent = "no camera: " + e.message;
    }
  });
  snap.addEventListener("click", () => {
    const name = document.getElementById("enrol-name").value.trim();
    if (!name) { status.textContent = "type the name first"; return; }
    const c = document.createElement("canvas");
    c.width = video.videoWidth; c.height = video.videoHeight;
    c.getContext("2d").drawImage(video, 0, 0);
    snap.disabled = true;
    status.textContent = "enrolling...";
    c.toBlob(async (blob) => {
      const fd = new FormData();
      fd.append("name", name);
      fd.append("photos", blob, "snapshot.jpg");
      const form = document.getElementById("enrol-form");
      if (form.thumbnail.checked) fd.append("thumbnail", "true");
      if (form.add.checked) fd.append("add", "true");
      const r = await window.maskwatch.fetch("/api/people", { method: "POST", body: fd });
      const body = await r.json().catch(() => ({}));
      snap.disabled = false;
      if (r.ok) {
        location.href = "/people?msg=" + encodeURIComponent("Enrolled " + body.person.name + " from a snapshot.");
      } else {
        status.textContent = body.detail || ("failed: HTTP " + r.status);
      }
    }, "image/jpeg", 0.92);
  });
})();
