// Evaluated in the page by test_text_contrast_meets_wcag_aa (WCAG 2 relative luminance).
() => {
  const rgb = (s) => (s.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map((v) => {
      const x = v / 255;
      return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const worst = [];
  // Visible elements holding text of their own; SVG <title> is a tooltip, not drawn text.
  const visible = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
  const leaves = [...document.querySelectorAll("body *")].filter(
    (el) =>
      el.tagName.toLowerCase() !== "title" &&
      visible(el) &&
      [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())
  );
  for (const el of leaves) {
    const style = getComputedStyle(el);
    const fg = rgb(el instanceof SVGElement ? style.fill : style.color).slice(0, 3);
    const [a, b] = [lum(fg), lum(background(el))].sort((x, y) => y - x);
    const ratio = (a + 0.05) / (b + 0.05);
    const name = `${el.tagName}.${el.className.baseVal ?? el.className}`;
    if (ratio < 4.5) worst.push(`${name} "${el.textContent.trim().slice(0, 30)}": ${ratio.toFixed(2)}`);
  }
  return worst;
}
